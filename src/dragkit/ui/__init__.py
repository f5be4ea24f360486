"""The interactive web app (``dragkit ui``).

- :mod:`.app` — ``build_app`` / ``serve``, and :func:`~.app.wire`, the one place where page events meet handlers;
- :mod:`.layout` — the Gradio components of the page, named (:class:`~.layout.Layout`);
- :mod:`.handlers` — the event handlers: plain functions returning updates by name;
- :mod:`.job` — one edit in a worker thread: device lock, cancel, throttled progress (no Gradio);
- :mod:`.context` — what all sessions share (editor, configs, device lock, cancel flags);
- :mod:`.texts`, :mod:`.session`, :mod:`.drawing`, :mod:`.params`, :mod:`.exchange` — pure helpers (status texts,
  session state, pictures, parameters, export/import), usable and tested without a browser.
"""
