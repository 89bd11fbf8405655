package chanplan

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
)

// Constraints restrict single radios for one planning run.
type Constraints struct {
	// Fixed radios keep their current channel (changed recently, or busy hour).
	Fixed map[string]bool
	// Forced radios must leave their current channel and may only take channels usable at
	// once (no CAC): radar.
	Forced map[string]bool
}

// Options tune the search. The zero value means the defaults.
type Options struct {
	// Restarts is the number of greedy starts with different radio orders (default 8).
	Restarts int
	// ExactUnits is the largest connected component (in movable units) solved exactly by
	// branch and bound (default 6); ExactBudget bounds its search nodes (default 2,000,000).
	ExactUnits  int
	ExactBudget int
}

func (o Options) withDefaults() Options {
	if o.Restarts <= 0 {
		o.Restarts = 8
	}
	if o.ExactUnits == 0 {
		o.ExactUnits = 6
	}
	if o.ExactBudget <= 0 {
		o.ExactBudget = 2_000_000
	}
	return o
}

// Plan is the planner's answer.
type Plan struct {
	Assign Assignment
	Cost   Cost
	// Exact is true when every connected component was solved to optimality.
	Exact bool
	// Forced are the radios that had to move.
	Forced []string
	// Nodes counts branch-and-bound nodes (0 when only the heuristic ran).
	Nodes int
}

// ErrNoChannel means a radio has no usable channel at all.
var ErrNoChannel = errors.New("no usable channel")

// unit is a set of radios that share one channel (a Group, or a single radio).
type unit struct {
	members []int
	cands   []int     // global spec indices
	unary   []float64 // per candidate
	edges   []uedge
	cur     int // index into cands of the current channel, -1 if none
}

// uedge couples two units: cost = a·OV[s_u][s_v] + b·OV[s_v][s_u].
type uedge struct {
	to   int
	a, b float64
}

// solver is the compiled problem.
type solver struct {
	m     *model
	specs []Spec
	ov    [][]float64
	units []unit
	opts  Options
	nodes int
}

func specIndex(specs *[]Spec, idx map[Spec]int, s Spec) int {
	if i, ok := idx[s]; ok {
		return i
	}
	idx[s] = len(*specs)
	*specs = append(*specs, s)
	return idx[s]
}

func (m *model) candidates(i int, fixed, forced bool) ([]Spec, error) {
	r := m.radios[i]
	cur := r.Current
	curOK := false
	if !cur.IsZero() {
		u, _ := Allowed(cur, r.Channels, m.in.Now)
		curOK = u != Unusable && (r.DFS || !IsDFS(cur, r.Channels))
	}
	if fixed && curOK && !forced {
		return []Spec{cur}, nil
	}
	minW := r.MinWidth
	if minW == 0 {
		minW = 20
	}
	var immediate, cac []Spec
	for _, w := range []int{20, 40, 80, 160} {
		if w < minW || w > r.MaxWidth {
			continue
		}
		for _, s := range SpecsFor(r.Band, w) {
			if forced && s == cur {
				continue
			}
			u, _ := Allowed(s, r.Channels, m.in.Now)
			if u == Unusable || (!r.DFS && IsDFS(s, r.Channels)) {
				continue
			}
			if u == NeedsCAC && s != cur {
				cac = append(cac, s)
			} else {
				immediate = append(immediate, s)
			}
		}
	}
	out := immediate
	if !forced || len(immediate) == 0 {
		out = append(out, cac...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("chanplan: radio %s: %w", r.ID, ErrNoChannel)
	}
	return out, nil
}

func newSolver(m *model, c Constraints, opts Options) (*solver, []string, error) {
	s := &solver{m: m, opts: opts.withDefaults()}
	idx := map[Spec]int{}
	forcedIDs := []string{}
	forced := make([]bool, len(m.radios))
	for i, r := range m.radios {
		f := c.Forced[r.ID] || slices.Contains(m.in.Force, r.ID)
		if !r.Current.IsZero() {
			u, _ := Allowed(r.Current, r.Channels, m.in.Now)
			if u == Unusable || (!r.DFS && IsDFS(r.Current, r.Channels)) {
				f = true
			}
		}
		forced[i] = f
		if f {
			forcedIDs = append(forcedIDs, r.ID)
		}
	}
	// Group radios into units.
	groups := map[string][]int{}
	var order []string
	for i, r := range m.radios {
		key := "\x00" + r.ID
		if r.Group != "" {
			key = "g:" + r.Group
		}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], i)
	}
	unitOf := make([]int, len(m.radios))
	for _, key := range order {
		members := groups[key]
		var cands []Spec
		for k, i := range members {
			r := m.radios[i]
			if k > 0 && r.Band != m.radios[members[0]].Band {
				return nil, nil, fmt.Errorf("chanplan: group %q mixes bands", r.Group)
			}
			cs, err := m.candidates(i, c.Fixed[r.ID], forced[i])
			if err != nil {
				return nil, nil, err
			}
			if k == 0 {
				cands = cs
				continue
			}
			cands = slices.DeleteFunc(cands, func(x Spec) bool { return !slices.Contains(cs, x) })
		}
		if len(cands) == 0 {
			return nil, nil, fmt.Errorf("chanplan: group %q: %w common to its radios", m.radios[members[0]].Group, ErrNoChannel)
		}
		u := unit{members: members, cur: -1}
		for _, cs := range cands {
			u.cands = append(u.cands, specIndex(&s.specs, idx, cs))
		}
		for _, i := range members {
			unitOf[i] = len(s.units)
		}
		s.units = append(s.units, u)
	}
	// Overlap table over every candidate spec.
	s.ov = make([][]float64, len(s.specs))
	for a := range s.specs {
		s.ov[a] = make([]float64, len(s.specs))
		for b := range s.specs {
			s.ov[a][b] = Overlap(s.specs[a], s.specs[b])
		}
	}
	// Unary costs and unit edges.
	type ukey struct{ u, v int }
	acc := map[ukey]*uedge{}
	var keys []ukey
	for ui := range s.units {
		u := &s.units[ui]
		u.unary = make([]float64, len(u.cands))
		for k, gi := range u.cands {
			sp := s.specs[gi]
			for _, i := range u.members {
				interf, pen := m.unary(i, sp)
				u.unary[k] += m.weight[i] * (interf + pen)
			}
			if sp == m.radios[u.members[0]].Current {
				u.cur = k
			}
		}
		for _, i := range u.members {
			for _, e := range m.adj[i] {
				vj := unitOf[e.to]
				alpha := e.g * m.weight[i] * m.load[e.to] // i suffers from e.to
				if vj == ui {
					// Inside a group both share the channel: constant overlap OV[s][s].
					for k, gi := range u.cands {
						u.unary[k] += alpha * s.ov[gi][gi]
					}
					continue
				}
				k := ukey{ui, vj}
				if acc[k] == nil {
					acc[k] = &uedge{to: vj}
					keys = append(keys, k)
				}
				acc[k].a += alpha
				k2 := ukey{vj, ui}
				if acc[k2] == nil {
					acc[k2] = &uedge{to: ui}
					keys = append(keys, k2)
				}
				acc[k2].b += alpha
			}
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].u != keys[j].u {
			return keys[i].u < keys[j].u
		}
		return keys[i].v < keys[j].v
	})
	for _, k := range keys {
		s.units[k.u].edges = append(s.units[k.u].edges, *acc[k])
	}
	return s, forcedIDs, nil
}

// local is unit u's cost on candidate k against the assignment (units with assign -1 ignored).
func (s *solver) local(u, k int, assign []int) float64 {
	un := &s.units[u]
	c := un.unary[k]
	a := un.cands[k]
	for _, e := range un.edges {
		if kv := assign[e.to]; kv >= 0 {
			b := s.units[e.to].cands[kv]
			c += e.a*s.ov[a][b] + e.b*s.ov[b][a]
		}
	}
	return c
}

func (s *solver) total(assign []int) float64 {
	t := 0.0
	for u := range s.units {
		un := &s.units[u]
		t += un.unary[assign[u]]
		a := un.cands[assign[u]]
		for _, e := range un.edges {
			if e.to > u {
				b := s.units[e.to].cands[assign[e.to]]
				t += e.a*s.ov[a][b] + e.b*s.ov[b][a]
			}
		}
	}
	return t
}

// best returns the candidate minimising local cost; ties keep the current one, then the lowest
// index, so that equal options never cause a move.
func (s *solver) best(u int, assign []int) (int, float64) {
	bk, bc := -1, math.Inf(1)
	cur := assign[u]
	if cur >= 0 {
		bk, bc = cur, s.local(u, cur, assign)
	}
	for k := range s.units[u].cands {
		if k == cur {
			continue
		}
		if c := s.local(u, k, assign); c < bc-1e-12 {
			bk, bc = k, c
		}
	}
	return bk, bc
}

func (s *solver) greedy(order []int) []int {
	assign := make([]int, len(s.units))
	for i := range assign {
		assign[i] = -1
	}
	for _, u := range order {
		k, _ := s.best(u, assign)
		assign[u] = k
	}
	return assign
}

// descend improves assign by single-unit moves until none helps (or 100 sweeps).
func (s *solver) descend(assign []int) {
	for sweep := 0; sweep < 100; sweep++ {
		moved := false
		for u := range s.units {
			if k, _ := s.best(u, assign); k != assign[u] {
				assign[u] = k
				moved = true
			}
		}
		if !moved {
			return
		}
	}
}

// pairMoves tries joint moves of coupled unit pairs (escapes local minima where two radios
// block each other), descending again after each improvement.
func (s *solver) pairMoves(assign []int) {
	for round := 0; round < 4; round++ {
		improved := false
		for u := range s.units {
			for _, e := range s.units[u].edges {
				v := e.to
				if v < u || len(s.units[u].cands)*len(s.units[v].cands) > 40000 {
					continue
				}
				cu, cv := assign[u], assign[v]
				base := s.local(u, cu, assign) + s.local(v, cv, assign) - (e.a*s.ov[s.units[u].cands[cu]][s.units[v].cands[cv]] + e.b*s.ov[s.units[v].cands[cv]][s.units[u].cands[cu]])
				bestC, bk, bl := base, cu, cv
				for k := range s.units[u].cands {
					assign[u] = k
					assign[v] = -1
					lu := s.local(u, k, assign)
					if lu >= bestC {
						continue
					}
					for l := range s.units[v].cands {
						assign[v] = l
						if c := lu + s.local(v, l, assign); c < bestC-1e-9 {
							bestC, bk, bl = c, k, l
						}
					}
				}
				assign[u], assign[v] = bk, bl
				if bk != cu || bl != cv {
					improved = true
					s.descend(assign)
				}
			}
		}
		if !improved {
			return
		}
	}
}

func seedOf(m *model) uint64 {
	h := fnv.New64a()
	for _, r := range m.radios {
		h.Write([]byte(r.ID))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// heuristic runs the greedy starts with local search and returns the best assignment.
func (s *solver) heuristic() []int {
	n := len(s.units)
	strength := make([]float64, n)
	for u := range s.units {
		for _, e := range s.units[u].edges {
			strength[u] += e.a + e.b
		}
		// Few candidates first (fixed and forced radios anchor the rest).
		strength[u] += 1e6 / float64(len(s.units[u].cands))
	}
	base := make([]int, n)
	for i := range base {
		base[i] = i
	}
	sort.SliceStable(base, func(i, j int) bool { return strength[base[i]] > strength[base[j]] })
	rng := rand.New(rand.NewPCG(seedOf(s.m), 0x6d657368726f6f74))
	var best []int
	bestCost := math.Inf(1)
	try := func(assign []int) {
		s.descend(assign)
		if c := s.total(assign); c < bestCost-1e-12 {
			best, bestCost = slices.Clone(assign), c
		}
	}
	// Start 0: keep everyone where they are, then improve (finds the nearest good plan).
	if cur := s.currentAssign(); cur != nil {
		try(cur)
	}
	for r := 0; r < s.opts.Restarts; r++ {
		order := slices.Clone(base)
		if r > 0 {
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		}
		try(s.greedy(order))
	}
	s.pairMoves(best)
	return best
}

// currentAssign is the assignment keeping every unit on its current channel, or nil when some
// unit has none.
func (s *solver) currentAssign() []int {
	a := make([]int, len(s.units))
	for u := range s.units {
		if s.units[u].cur < 0 {
			return nil
		}
		a[u] = s.units[u].cur
	}
	return a
}

// components returns the connected components of the unit graph.
func (s *solver) components() [][]int {
	seen := make([]bool, len(s.units))
	var out [][]int
	for u := range s.units {
		if seen[u] {
			continue
		}
		var comp []int
		stack := []int{u}
		seen[u] = true
		for len(stack) > 0 {
			x := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			comp = append(comp, x)
			for _, e := range s.units[x].edges {
				if !seen[e.to] {
					seen[e.to] = true
					stack = append(stack, e.to)
				}
			}
		}
		sort.Ints(comp)
		out = append(out, comp)
	}
	return out
}

// exact solves one component by depth-first branch and bound, starting from the incumbent in
// assign (which it improves in place). It returns false when the node budget ran out.
//
// Every unassigned unit keeps the vector of its candidates' costs against everything assigned
// so far (outside the component: fixed; inside: the branch). The lower bound of a branch is the
// cost so far plus, for each unassigned unit, the minimum of its vector: valid because pair
// costs between still unassigned units are never negative.
func (s *solver) exact(comp []int, assign []int, budget int) bool {
	order := slices.Clone(comp)
	deg := map[int]float64{}
	for _, u := range comp {
		for _, e := range s.units[u].edges {
			deg[u] += e.a + e.b
		}
	}
	sort.SliceStable(order, func(i, j int) bool {
		if deg[order[i]] != deg[order[j]] {
			return deg[order[i]] > deg[order[j]]
		}
		return len(s.units[order[i]].cands) < len(s.units[order[j]].cands)
	})
	work := slices.Clone(assign)
	for _, u := range comp {
		work[u] = -1
	}
	// The incumbent's cost counted the way the search counts: each unit against the units
	// assigned before it (all outside the component, and the earlier ones inside).
	incumbent := 0.0
	for _, u := range order {
		incumbent += s.local(u, assign[u], work)
		work[u] = assign[u]
	}
	for _, u := range comp {
		work[u] = -1
	}
	pos := map[int]int{}
	for i, u := range comp {
		pos[u] = i
	}
	vec := make([][]float64, len(comp))
	for i, u := range comp {
		vec[i] = make([]float64, len(s.units[u].cands))
		for k := range vec[i] {
			vec[i][k] = s.local(u, k, work)
		}
	}
	// scratch[d][i] holds unit i's updated vector below depth d; ks[d] the candidate order.
	seq := order
	scratch := make([][][]float64, len(seq))
	ks := make([][]int, len(seq))
	for d, u := range seq {
		scratch[d] = make([][]float64, len(comp))
		for i, v := range comp {
			scratch[d][i] = make([]float64, len(s.units[v].cands))
		}
		ks[d] = make([]int, len(s.units[u].cands))
	}
	bestAssign := slices.Clone(assign)
	nodes := 0
	aborted := false
	type saved struct {
		i int
		v []float64
	}
	undo := make([][]saved, len(seq))
	var rec func(depth int, partial float64)
	rec = func(depth int, partial float64) {
		if depth == len(seq) {
			if partial < incumbent-1e-12 {
				incumbent = partial
				copy(bestAssign, work)
			}
			return
		}
		u := seq[depth]
		cv := vec[pos[u]]
		cand := ks[depth]
		for k := range cand {
			cand[k] = k
		}
		sort.SliceStable(cand, func(i, j int) bool { return cv[cand[i]] < cv[cand[j]] })
		for _, k := range cand {
			if aborted {
				return
			}
			nodes++
			if nodes > budget {
				aborted = true
				return
			}
			lb := partial + cv[k]
			if lb >= incumbent-1e-12 {
				break // candidates are sorted: the rest cost more
			}
			work[u] = k
			a := s.units[u].cands[k]
			undo[depth] = undo[depth][:0]
			for _, e := range s.units[u].edges {
				if work[e.to] >= 0 {
					continue
				}
				i := pos[e.to]
				nv := scratch[depth][i]
				copy(nv, vec[i])
				for kv, b := range s.units[e.to].cands {
					// e is u→v: u pays e.a·OV[a][b], v pays e.b·OV[b][a]; v's vector holds both.
					nv[kv] += e.a*s.ov[a][b] + e.b*s.ov[b][a]
				}
				undo[depth] = append(undo[depth], saved{i, vec[i]})
				vec[i] = nv
			}
			bound := lb
			for _, v := range seq[depth+1:] {
				bound += slices.Min(vec[pos[v]])
				if bound >= incumbent-1e-12 {
					break
				}
			}
			if bound < incumbent-1e-12 {
				rec(depth+1, lb)
			}
			for j := len(undo[depth]) - 1; j >= 0; j-- {
				vec[undo[depth][j].i] = undo[depth][j].v
			}
			work[u] = -1
		}
	}
	rec(0, 0)
	s.nodes += nodes
	copy(assign, bestAssign)
	return !aborted
}

// Solve plans channels for every radio of the input under the constraints.
func Solve(in Input, c Constraints, opts Options) (Plan, error) {
	m, err := newModel(in)
	if err != nil {
		return Plan{}, err
	}
	s, forced, err := newSolver(m, c, opts)
	if err != nil {
		return Plan{}, err
	}
	assign := s.heuristic()
	exact := true
	for _, comp := range s.components() {
		if len(comp) > s.opts.ExactUnits {
			exact = false
			continue
		}
		size := 1.0
		for _, u := range comp {
			size *= float64(len(s.units[u].cands))
		}
		if size == 1 {
			continue
		}
		if !s.exact(comp, assign, s.opts.ExactBudget) {
			exact = false
		}
	}
	return s.plan(assign, forced, exact)
}

// Optimum solves every component exactly, whatever its size, within budget search nodes per
// component; ok is false when some component ran out of budget (the plan is then the best
// found). For benchmarks and tests on small instances.
func Optimum(in Input, c Constraints, budget int) (Plan, bool, error) {
	m, err := newModel(in)
	if err != nil {
		return Plan{}, false, err
	}
	s, forced, err := newSolver(m, c, Options{ExactBudget: budget})
	if err != nil {
		return Plan{}, false, err
	}
	assign := s.heuristic()
	ok := true
	for _, comp := range s.components() {
		if !s.exact(comp, assign, s.opts.ExactBudget) {
			ok = false
		}
	}
	p, err := s.plan(assign, forced, ok)
	return p, ok, err
}

func (s *solver) plan(assign []int, forced []string, exact bool) (Plan, error) {
	a := Assignment{}
	for u, un := range s.units {
		sp := s.specs[un.cands[assign[u]]]
		for _, i := range un.members {
			a[s.m.radios[i].ID] = sp
		}
	}
	cost, err := s.m.evaluate(a)
	if err != nil {
		return Plan{}, err
	}
	return Plan{Assign: a, Cost: cost, Exact: exact, Forced: forced, Nodes: s.nodes}, nil
}
