"""tunestudy: what instruction tuning does to a pretrained language model.

Data flows one way: world -> corpus and instruction sets -> base model ->
tuned model -> responses -> metrics -> results file -> figure -> page.
"""

import warnings

# tqdm.auto, imported by the libraries we load, warns on every chapter page when ipywidgets is
# absent (we never draw a notebook bar: tuning uses plain tqdm, off the page).
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
