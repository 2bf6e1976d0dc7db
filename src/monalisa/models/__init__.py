"""The network a recipe describes, and its packed copy for fast CPU renders."""
