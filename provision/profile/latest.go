package profile

// Latest turns a subscription (provision/agent.Agent.Subscribe) into a channel that holds only
// the newest verified profile: a consumer busy applying one finds the latest waiting, never a
// queue of stale ones. cancel ends the subscription.
func Latest(subscribe func(fn func(*Verified)) (cancel func())) (latest <-chan *Verified, cancel func()) {
	ch := make(chan *Verified, 1)
	cancel = subscribe(func(v *Verified) {
		select { // drop the one not taken yet
		case <-ch:
		default:
		}
		ch <- v
	})
	return ch, cancel
}
