package iscsi

// Observe makes d call f with every tgtadm argument vector, before running
// it. Set it before d is used.
func Observe(d *Driver, f func(args []string)) { d.observe = f }
