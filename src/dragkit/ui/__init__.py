"""The interactive web app (``dragkit ui``): Gradio UI in :mod:`.app`; pure helpers (session state, drawing,
parameters, export/import) in the other modules, usable and tested without a browser."""
