"""``measure serve``: a local web app for live experiments and for watching a run folder.

- :mod:`measure.serve.requests`: what a user may submit (fields, limits), checked into an
  :class:`~measure.serve.requests.ExperimentSpec`;
- :mod:`measure.serve.catalogue`: problem pairs from user text, the built-in sets or a dataset;
- :mod:`measure.serve.experiments`: one experiment's messages, the queue that runs one at a time
  per model in a worker thread, and cancellation;
- :mod:`measure.serve.live`: engine events (:mod:`measure.engine.events`) -> messages for the page;
- :mod:`measure.serve.marks`: detection/adaptation marks from a finished run's calibration;
- :mod:`measure.serve.watch`: a ``measure run`` folder read as it grows, with its Findings;
- :mod:`measure.serve.app`: the Starlette app (JSON API, server-sent events, the page);
- :mod:`measure.serve.cli`: the ``serve`` subcommand (uvicorn).

The page (``static/``) is self-contained: no CDN, and it writes every model or user text with
``textContent``, never as HTML.
"""
