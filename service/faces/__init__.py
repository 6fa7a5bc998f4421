"""Face search: an in-memory index of face embeddings, kept in step with the database."""
