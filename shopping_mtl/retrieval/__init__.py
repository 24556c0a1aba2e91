"""Two-tower retrieval (TFRS): examples, model, index and export, and the merged candidate set."""
