"""The local AWS made as strict as AWS: identities, IAM, limits, presigned POST policies, and faults.

moto emulates the services; it checks no IAM policy, sizes items its own way and accepts any presigned
POST. :class:`StrictLayer` wraps moto's server (in its own process) and refuses, with AWS's own error,
what AWS would refuse; it can also make a fraction of the functions' calls fail as AWS calls fail.
"""

from .app import StrictLayer
from .faults import KINDS, FaultSettings
from .principals import ADMIN_ACCESS_KEY, ADMIN_SECRET_KEY

__all__ = ["ADMIN_ACCESS_KEY", "ADMIN_SECRET_KEY", "KINDS", "FaultSettings", "StrictLayer"]
