"""N instances numbered I = 1..N, each sleeping SLEEP seconds (pargs N:<count>, SLEEP:<seconds>)."""
from maestrowf.datastructures.core import ParameterGenerator


def get_custom_generator(env, **kwargs):
    count = int(kwargs.get("N", 10))
    generator = ParameterGenerator()
    generator.add_parameter("I", list(range(1, count + 1)), "I.%%")
    generator.add_parameter("SLEEP", [kwargs.get("SLEEP", "0")] * count, "S.%%")
    return generator
