"""The model layer, pure numpy/torch: observations, the response model, rewards, the environment,
policies and baselines. No database import.
"""
