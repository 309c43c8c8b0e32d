"""Training data: sources (folders, datasets, parquet, Hub) and decoding, random crops and batches, distorted views."""
