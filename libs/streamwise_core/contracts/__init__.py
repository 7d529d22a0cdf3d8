"""What services and clients agree on: the app spec, records, schemas, signed blobs and their keys, retention, the model store's ports."""
