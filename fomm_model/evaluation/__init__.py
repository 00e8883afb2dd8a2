"""Model evaluation with face landmarks: reconstruction AKD and expression transfer (``fomm evaluate``)."""
