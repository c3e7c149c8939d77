;; component text.
;; attack: import the granted `log` interface with a forged signature
;;         (`log: func(x: u64)`), type confusion at the host boundary.
;; expect: refused when linking: the component cannot be linked (the name
;;         passes the import check; the types do not).
(component
  (import "vivarium:agent/log@0.1.0" (instance
    (export "log" (func (param "x" u64))))))
