"""The card a trained model carries: the JSON file that says how it was made.

Written by the trainers, read by the encoder model type (models/encoder_classifier.py);
it lives here, below both, so that neither imports the other.
"""

CARD_NAME = "moral_ambiguity_card.json"
