"""Data: the layout reader, person splits, decoding and its cache, transforms, datasets."""
