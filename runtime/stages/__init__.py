"""One module per stage: read what earlier stages published, call the library, publish atomically (see runtime.layout)."""
