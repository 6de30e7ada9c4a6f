"""Recording real PyTorch programs: the same events as gradviz's engine, from PyTorch's own graph.

Forward: a ``TorchFunctionMode`` sees every op; an op that made a new ``grad_fn`` is announced
(with the nodes made inside it, e.g. linear's TBackward0), its module scope coming from global
module forward hooks. Backward: when ``Tensor.backward``, ``torch.autograd.backward`` or
``torch.autograd.grad`` starts, every node reachable from the roots gets a pre-hook and a hook
(an AccumulateGrad node: a pre-hook, and its leaf a post-accumulate-grad hook, which also tells its
exit), removed when the pass ends; a debugger pause waits inside the pre-hook, so it is PyTorch's
own engine that waits. The hooks hold no gradient past their call: PyTorch copies a gradient into
``.grad`` instead of taking it while anyone else holds it. Optimizer steps come from the global
optimizer step hooks. Values are summarised where they live (GPU included) and only the sample,
or what is kept or asked for, is copied to the CPU.

torch stays optional: nothing here is imported by ``import gradviz``; recording attaches this
adapter when the program has imported torch, or as soon as it does. No module here imports torch:
it comes from ``sys.modules``, or from the import that loads it.

The modules, each importing only those before it:

- ``values``: value conversion: dtype tables, ``TorchAdapter`` (tags, node metadata, memory,
  summaries, copies to numpy).
- ``dispatch``: ``MultiAdapter``, each object to the adapter that owns it (engine or PyTorch).
- ``hooks``: the hook lifecycle: ``TorchRecording`` (attach and detach; the TorchFunctionMode,
  backward and optimizer step hooks), ``TorchAttachment`` (now, or when torch is imported).
"""
from gradviz.adapters.torch.dispatch import MultiAdapter
from gradviz.adapters.torch.hooks import TorchAttachment, TorchRecording
from gradviz.adapters.torch.values import TorchAdapter

__all__ = ["MultiAdapter", "TorchAdapter", "TorchAttachment", "TorchRecording"]
