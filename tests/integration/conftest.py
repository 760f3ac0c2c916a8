import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def embedded_model():
    from personalens import load_model

    return load_model(device="cpu")


@pytest.fixture(scope="session")
def embedded_hf():
    from personalens.model.gguf_convert import embedded_hf_dir
    from personalens.model.load import load_hf_dir

    hf, tok = load_hf_dir(embedded_hf_dir())
    return hf, tok
