// Anchors the precompiled LibTorch header target.
