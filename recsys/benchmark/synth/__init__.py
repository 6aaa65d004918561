"""Synthetic shop data with a hidden ground truth (see README.md in this folder).

`recsys.benchmark.synth.generate.generate_data` writes the input files and the truth; `recsys.benchmark.synth.truth`
holds the traits and the response model and is imported only by the generator and by evaluation.
Nothing is imported here, so importing the package never loads the truth.
"""
