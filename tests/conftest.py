"""What every test module of this folder shares.

pytester's in-process runs (the plugin's black-box tests) drop, when they end, the modules they
imported. ``torch._dynamo`` registers an operator library when it is imported and cannot register
it twice, so a test that imports it after an in-process run did (fake tensors, FSDP, Fabric) would
fail with "Only a single TORCH_LIBRARY can be used to register the namespace _inductor_test".
Imported here, once, before any test runs, it is never imported by an in-process run.
"""

import torch._dynamo  # noqa: F401
