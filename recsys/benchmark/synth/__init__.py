"""Synthetic shop data with a hidden ground truth (see README.md in this folder).

`recsys.benchmark.synth.generate.generate_data` writes the input files and the truth; it runs
`world.simulate` (users, `sessions`, `campaigns`) and the `writers`. `recsys.benchmark.synth.truth`
holds the traits (`traits`) and the response model (`response`), stored by `truth_file`, and is
imported only by the generator and by evaluation. `params` holds every constant, `clock` the calendar.
Nothing is imported here, so importing the package never loads the truth.
"""
