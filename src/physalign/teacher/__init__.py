"""The teacher of representation-alignment methods (REPA, TRD, TSA, M-TSA): a tiny ``VideoMAEModel``
pre-trained on world videos, its cached features, and the projector from student tokens to its grid."""
