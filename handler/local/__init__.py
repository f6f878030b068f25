"""Tools that run the function on a workstation, as Lambda and API Gateway would: not shipped.

The image and the layer copy only the runtime packages (handler/api, adapters, batch, inference
and handler/*.py); everything here stays behind. `python -m handler invoke` (invoke.py), `serve
--through-lambda` (gateway.py), and the Runtime API that runs the function under awslambdaric for
the cold-start benchmark and the runtime tests (runtime_api.py) sit above the adapters and import
them, never the other way round.
"""
