"""The built-in candidate sources: importing this module registers them."""

from shopping_mtl.candidates import covisit, popularity, two_tower, user_history

BUILTIN = (two_tower.SOURCE, user_history.SOURCE, covisit.SOURCE, popularity.SOURCE)
