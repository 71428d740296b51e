def get_custom_generator(env, **kwargs):
    return {"P": [1, 2, 3]}
