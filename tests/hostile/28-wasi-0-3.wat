;; component text.
;; attack: import a WASI 0.3 interface (`wasi:cli/environment@0.3.0`).
;; expect: refused before instantiation, naming the import (incompatible
;;         with the host's WASI 0.2).
(component
  (import "wasi:cli/environment@0.3.0" (instance)))
