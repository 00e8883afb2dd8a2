"""Self-supervised FOMM training from video folders (original losses and schedule; resumable, logged, DDP-ready)."""
