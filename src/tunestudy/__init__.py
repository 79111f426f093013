"""tunestudy: what instruction tuning does to a pretrained language model.

Data flows one way: world -> corpus and instruction sets -> base model ->
tuned model -> responses -> metrics -> results file -> figure -> page.
"""

__version__ = "0.1.0"
