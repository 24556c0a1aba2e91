"""Raw logs -> canonical events: dataset specs, readers, validation and the evaluation split."""
