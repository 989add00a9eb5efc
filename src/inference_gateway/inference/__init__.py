"""The model's work: specs and loading, backends, preprocessing, postprocessing."""
