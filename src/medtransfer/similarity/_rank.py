"""The rank rule of CCA, shared by :func:`~medtransfer.similarity.cca` and the batched Gram form
(:mod:`medtransfer.similarity.batched`) that the image bootstrap and the permutation null use, so
that both count the same directions on the same data.

Each side's neurons are scaled to unit variance (its correlation matrix ``C``). A direction of a
side is present when its eigenvalue of ``C`` exceeds ``RANK_RTOL`` times the largest one; below,
it is numerically a combination of the others (a near-duplicate channel) and contributes no
canonical correlation. ``cca`` applies the rule to the singular values of the scaled, centred
data (``s_i > sqrt(RANK_RTOL) s_max``), the Gram form to the eigenvalues of ``C`` itself. The
Gram form resolves eigenvalues down to about ``eps * lambda_max`` (2e-16 relative), so the cutoff
sits six orders above its rounding: a direction just above the cutoff is whitened with a relative
error of about 2e-16 / 1e-10, i.e. its correlation to about 1e-6.

Both fast paths (Cholesky) are taken only when ``trace(C^-1) <= MAX_TRACE_INV``: then every
eigenvalue is at least ``1 / MAX_TRACE_INV = 1e-6``, above ``RANK_RTOL * lambda_max`` for any side
of up to 10^4 neurons (``lambda_max <= p``), so no direction the rule would drop is kept there.
"""

#: Relative eigenvalue cutoff of a side's correlation matrix (see the module notes).
RANK_RTOL = 1e-10
#: Cholesky (fast) paths only while trace(C^-1) of both correlation matrices is at most this.
MAX_TRACE_INV = 1e6
