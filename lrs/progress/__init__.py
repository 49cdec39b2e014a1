"""Module progress: the catalogue, the profiles, the rules, and the derivation that applies them."""
