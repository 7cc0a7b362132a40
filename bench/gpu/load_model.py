"""Loads the model as the server does (agentic.engine.model.LlamaModel, every layer offloaded),
outside the server: on the main thread, or on a plain thread (`thread`). Part of check.sh diagnose:
on the H100 the server segfaulted in llama_model_load_from_file while this did not."""

import faulthandler
import sys
import threading

from agentic.config import EngineSettings
from agentic.engine.model import LlamaModel

faulthandler.enable()


def load(where: str, path: str) -> None:
    model = LlamaModel(EngineSettings(model_path=path))
    print(f"loaded on the {where} thread: {model.name}, gpu_offload={model.gpu_offload}, {model.kv_cells} cells", flush=True)
    model.close()


if __name__ == "__main__":
    where, path = sys.argv[1], sys.argv[2]
    if where == "thread":
        worker = threading.Thread(target=load, args=(where, path))
        worker.start()
        worker.join()
    else:
        load(where, path)
