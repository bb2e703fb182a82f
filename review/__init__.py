"""Review experience: the HTML contact sheet of picks, and the built-in demo of the whole pipeline."""
