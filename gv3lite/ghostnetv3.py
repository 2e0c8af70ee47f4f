"""PLACEHOLDER (being replaced by the model engineer): GhostNetV3 and the model registry."""


def list_models():
    return ["ghostnetv3_050", "ghostnetv3_100", "ghostnetv3_130", "ghostnetv3_160"]


def create_model(name, num_classes=1000, deploy=False, **kwargs):
    import timm
    if name not in list_models():
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()}")
    model = timm.create_model(name, num_classes=num_classes, **kwargs)
    if deploy:
        from gv3lite.reparam import reparameterize
        model = reparameterize(model, inplace=True)
    return model
