package route

import "slices"

// ChannelIDs returns the id of every channel in this process's index (the enabled channels
// it routes to), sorted, each once whatever models it serves.
func (r *Router) ChannelIDs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for _, routes := range r.byModel {
		for _, rt := range routes {
			out = append(out, rt.Channel.ID)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
