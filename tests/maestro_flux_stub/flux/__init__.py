"""A stand-in for Flux's Python bindings, put on maestro's PYTHONPATH by the differential tests only.

maestrowf's Flux adapter asks a broker for its version and queues before it writes a script;
without a Flux installation a dry run would stop there. This answers those two questions so
that ``maestro run --dry`` writes its Flux scripts, which are what the tests compare. Nothing
is ever submitted.
"""


class _Reply:
    def get(self) -> dict:
        return {}


class Flux:
    def attr_get(self, key: str) -> str:
        return "0.49.0"

    def rpc(self, *args, **kwargs) -> _Reply:
        return _Reply()
