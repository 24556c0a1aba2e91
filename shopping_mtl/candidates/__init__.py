"""Candidate sources, their merge with quotas, and the candidate set of any day.

Each source is one module that registers itself (`registry.register`); importing this package
registers the built-in ones, in this order: two_tower, user_history, covisit, popularity.
"""

from shopping_mtl.candidates import two_tower, user_history, covisit, popularity  # noqa: F401  (registers them)
from shopping_mtl.candidates.candidate_set import baseline_list, build_candidate_set
from shopping_mtl.candidates.merge import merge_sources
from shopping_mtl.candidates.registry import ServingCandidates, ServingContext, Source, SourceDay, register

__all__ = ["ServingCandidates", "ServingContext", "Source", "SourceDay", "baseline_list", "build_candidate_set",
           "merge_sources", "register"]
