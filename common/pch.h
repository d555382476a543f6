// Precompiled header shared by every target that uses LibTorch.
#include <torch/torch.h>
