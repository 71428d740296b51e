"""A Maestro pgen that reads a spec variable with env.find and hands back every keyword it got.

Each keyword argument becomes a parameter (one copy of its value per trial), so a test can
read what legato passed: the user's pargs, OUTPUT_PATH (a string) and SPECROOT (a Variable).
"""
from maestrowf.datastructures.core import ParameterGenerator


def get_custom_generator(env, **kwargs):
    count = int(kwargs.get("COUNT", env.find("TRIALS").value))
    generator = ParameterGenerator()
    generator.add_parameter("TRIAL", list(range(count)), "TRIAL.%%")
    for key, value in sorted(kwargs.items()):
        text = value.value if key == "SPECROOT" else value
        generator.add_parameter(key, [text] * count, [f"{key}-{i}" for i in range(count)])
    generator.add_parameter("KINDS", [f"{type(kwargs['OUTPUT_PATH']).__name__}"] * count, "KINDS.%%")
    return generator
