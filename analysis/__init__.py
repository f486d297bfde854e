"""Analyses over a finished study's run directories and saved attack scores (above mia/ and training/ in the
layer order: they read what those wrote and import nothing that imports them)."""
