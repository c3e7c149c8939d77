;; component text.
;; attack: import a WASI interface from a patch release newer than the host's
;;         (`wasi:cli/environment@0.2.99`), hoping the linker matches it loosely.
;; expect: refused before instantiation, naming the import: `WASI 0.2.99 is
;;         newer than or incompatible with this host's WASI 0.2.x`.
(component
  (import "wasi:cli/environment@0.2.99" (instance)))
