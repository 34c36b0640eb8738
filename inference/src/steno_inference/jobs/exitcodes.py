"""How a job pod ends, as process exit codes the operator's ``podFailurePolicy`` can match.

======  ==================  =============================================================
code    name                meaning and what the Job should do
======  ==================  =============================================================
0       EXIT_DONE           the shard's manifest is committed (some files may have failed:
                            they are listed in it with their reason)
1       EXIT_FAILED         an unexpected error (a bug): counts against ``backoffLimit``
2       EXIT_BAD_SPEC       the plan, spec, shard index, model or storage configuration is
                            wrong, or stored job state is inconsistent: retrying cannot
                            help, so the Job should fail (``action: FailJob``)
75      EXIT_RETRYABLE      storage unavailable, the engine or device failed, or the pod
                            was asked to stop: run again, committed files are kept
                            (EX_TEMPFAIL from sysexits.h)
======  ==================  =============================================================
"""

from __future__ import annotations

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_BAD_SPEC = 2
EXIT_RETRYABLE = 75
