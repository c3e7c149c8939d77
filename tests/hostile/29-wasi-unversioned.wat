;; component text.
;; attack: import a WASI interface without a version (`wasi:cli/environment`).
;; expect: refused before instantiation: `unversioned WASI import`.
(component
  (import "wasi:cli/environment" (instance)))
