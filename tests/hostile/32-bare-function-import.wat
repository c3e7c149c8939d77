;; component text.
;; attack: import a bare function (`backdoor`), not an interface, hoping
;;         the host links anything by name.
;; expect: refused: `not an interface import`.
(component
  (import "backdoor" (func)))
