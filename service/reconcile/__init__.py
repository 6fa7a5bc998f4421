"""Never lose a result: jobs submitted upstream are *expected* (:mod:`.expected`); one that
does not arrive in time is fetched from the upstream's status endpoint by the reconciler
(:mod:`.reconciler`, one leader per database), through the client of :mod:`.upstream`, after
:mod:`.validate` has judged the answer. :mod:`.submit` uploads media the way the reference
describes (the ``submit`` command) and :mod:`.webm` reads a WebM file's duration for its
local checks. Off (nothing runs, nothing changes) while ``RECEIVER_UPSTREAM_URL`` is unset.
"""
