"""Data: the Parquet sample format, the generated dataset, and the streaming reader."""
