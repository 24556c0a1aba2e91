"""The multi-task ranker: click, save and purchase heads over the merged candidate set."""
