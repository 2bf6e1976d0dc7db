"""What a run looks like inside: neurons, the network view, renders at any size."""
