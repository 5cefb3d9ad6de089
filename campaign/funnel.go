package campaign

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/enroll/adoption"
	"github.com/passbridge/passbridge/store"
)

// Funnel is how far a campaign's people got. Each stage counts people
// (recipients), independently: someone who signed in with the directory
// password and enrolled is enrolled without having opened the link.
type Funnel struct {
	// Recipients are the people the campaign selected (no passkey when
	// selected).
	Recipients int `json:"recipients"`
	// Invited: an invitation was queued for them (not cancelled before it
	// went out); of those, Pending not sent yet, Delivered accepted by the
	// mail server, Bounced refused by it for good, Failed given up after
	// campaign.max_attempts or interrupted (unknown).
	Invited   int `json:"invited"`
	Pending   int `json:"pending"`
	Delivered int `json:"delivered"`
	Bounced   int `json:"bounced"`
	Failed    int `json:"failed"`
	// Opened used their campaign link (pressed Continue on its page:
	// mail scanners that only fetch the link do not count).
	Opened int `json:"opened"`
	// Began started a passkey registration after being selected.
	Began int `json:"began"`
	// Enrolled have a passkey now; Dropped left the scope or were
	// disabled before they did.
	Enrolled int `json:"enrolled"`
	Dropped  int `json:"dropped"`
	// Retries are the send attempts beyond the first (the mail server was
	// down or answered 4xx), over every message of the campaign.
	Retries int `json:"retries"`
	// TimeToPasskey is from the invitation's delivery to the first
	// passkey, over the enrolled who were invited.
	TimeToPasskey adoption.Timing `json:"time_to_passkey"`
	// Steps are the invitation and each reminder in sending order, with
	// how many people enrolled after that mail (and before the next one
	// they got).
	Steps []StepShare `json:"steps"`
}

// StepShare is the effect of one step.
type StepShare struct {
	Step string `json:"step"`
	// Sent is how many people the mail was delivered to.
	Sent int `json:"sent"`
	// Enrolled is how many enrolled after this mail and before any later
	// one; Share is that over the delivered invitations.
	Enrolled int     `json:"enrolled"`
	Share    float64 `json:"share"`
}

// ComputeFunnel reads a campaign's funnel.
func ComputeFunnel(ctx context.Context, db *store.DB, cfg *config.Config, c *Campaign) (*Funnel, error) {
	t := newTables(db, cfg)
	f := &Funnel{Steps: []StepShare{}}
	var recs []struct {
		ID        int64        `db:"id"`
		State     string       `db:"state"`
		InvitedAt sql.NullTime `db:"invited_at"`
		OpenedAt  sql.NullTime `db:"opened_at"`
		Enrolled  sql.NullTime `db:"enrolled_at"`
		Began     int          `db:"began"`
	}
	began := "(SELECT COUNT(*) FROM " + t.n.Ceremonies + " x WHERE x." + t.q("identity_id") + " = r." + t.q("identity_id") +
		" AND x." + t.q("kind") + " IN (?, ?, ?) AND x." + t.q("created_at") + " >= r." + t.q("added_at") + ")"
	if err := store.Select(ctx, db, &recs, "SELECT "+t.cols("r", "id", "state", "invited_at", "opened_at", "enrolled_at")+", "+began+" AS "+t.q("began")+
		" FROM "+t.recipients+" r WHERE r."+t.q("campaign_id")+" = ?", KindRegistration, KindUpgrade, KindAppRegistration, c.ID); err != nil {
		return nil, fmt.Errorf("campaign %q: read the funnel: %w", c.Name, err)
	}
	var msgs []struct {
		Recipient int64        `db:"recipient_id"`
		Step      string       `db:"step"`
		State     string       `db:"state"`
		Attempts  int          `db:"attempts"`
		SentAt    sql.NullTime `db:"sent_at"`
	}
	if err := store.Select(ctx, db, &msgs, "SELECT "+t.cols("", "recipient_id", "step", "state", "attempts", "sent_at")+" FROM "+t.m+" WHERE "+t.q("campaign_id")+" = ?", c.ID); err != nil {
		return nil, fmt.Errorf("campaign %q: read the mail: %w", c.Name, err)
	}
	type sent struct {
		step string
		at   time.Time
	}
	sentTo := map[int64][]sent{}
	stepSent := map[string]int{}
	firstSent := map[string]time.Time{}
	for _, m := range msgs {
		if m.Attempts > 1 {
			f.Retries += m.Attempts - 1
		}
		if m.Step == StepInvite {
			switch m.State {
			case MsgCancelled:
			case MsgQueued, MsgSending:
				f.Invited++
				f.Pending++
			case MsgSent:
				f.Invited++
				f.Delivered++
			case MsgBounced:
				f.Invited++
				f.Bounced++
			case MsgFailed, MsgUnknown:
				f.Invited++
				f.Failed++
			}
		}
		if m.State == MsgSent && m.SentAt.Valid {
			at := m.SentAt.Time.UTC()
			sentTo[m.Recipient] = append(sentTo[m.Recipient], sent{m.Step, at})
			stepSent[m.Step]++
			if ft, ok := firstSent[m.Step]; !ok || at.Before(ft) {
				firstSent[m.Step] = at
			}
		}
	}
	enrolledAfter := map[string]int{}
	var ttp []time.Duration
	for _, r := range recs {
		f.Recipients++
		if r.OpenedAt.Valid {
			f.Opened++
		}
		if r.Began > 0 {
			f.Began++
		}
		switch r.State {
		case RecipientEnrolled:
			f.Enrolled++
		case RecipientDropped:
			f.Dropped++
		}
		if r.State != RecipientEnrolled || !r.Enrolled.Valid {
			continue
		}
		at := r.Enrolled.Time.UTC()
		if r.InvitedAt.Valid {
			ttp = append(ttp, max(at.Sub(r.InvitedAt.Time.UTC()), 0))
		}
		last := ""
		var lastAt time.Time
		for _, s := range sentTo[r.ID] {
			if !s.at.After(at) && (last == "" || s.at.After(lastAt)) {
				last, lastAt = s.step, s.at
			}
		}
		if last != "" {
			enrolledAfter[last]++
		}
	}
	f.TimeToPasskey = adoption.Summarize(ttp)
	steps := make([]string, 0, len(stepSent))
	for s := range stepSent {
		steps = append(steps, s)
	}
	// In sending order: the invitation first, then by the first delivery.
	sort.Slice(steps, func(a, b int) bool {
		if (steps[a] == StepInvite) != (steps[b] == StepInvite) {
			return steps[a] == StepInvite
		}
		if !firstSent[steps[a]].Equal(firstSent[steps[b]]) {
			return firstSent[steps[a]].Before(firstSent[steps[b]])
		}
		return steps[a] < steps[b]
	})
	for _, s := range steps {
		ss := StepShare{Step: s, Sent: stepSent[s], Enrolled: enrolledAfter[s]}
		if f.Delivered > 0 {
			ss.Share = float64(ss.Enrolled) / float64(f.Delivered)
		}
		f.Steps = append(f.Steps, ss)
	}
	return f, nil
}

// Ceremony kinds the funnel's "began" counts: the portal's registrations,
// its automatic upgrades after a password sign-in, and the invitations
// after a password sign-in to an application.
const (
	KindRegistration    = "registration"
	KindUpgrade         = "upgrade"
	KindAppRegistration = "app_registration"
)

// maxMetricCampaigns bounds the campaign label: the newest campaigns that
// are not cancelled.
const maxMetricCampaigns = 20

var (
	peopleDesc = prometheus.NewDesc("passbridge_campaign_people",
		"People of an enrollment campaign by funnel stage (recipients, invited, pending, delivered, bounced, failed, opened, began, enrolled, dropped); the 20 newest campaigns that are not cancelled.", []string{"campaign", "stage"}, nil)
	ttpDesc = prometheus.NewDesc("passbridge_campaign_time_to_passkey_seconds",
		"Time from a campaign's invitation to the person's first passkey, by quantile (NaN before anyone enrolled).", []string{"campaign", "quantile"}, nil)
	stepDesc = prometheus.NewDesc("passbridge_campaign_enrolled_after",
		"People who enrolled after a campaign mail (the invitation or a reminder) and before the next one, by step.", []string{"campaign", "step"}, nil)
	retriesDesc = prometheus.NewDesc("passbridge_campaign_mail_retries",
		"Send attempts of a campaign's mail beyond the first (the mail server was down or answered 4xx).", []string{"campaign"}, nil)
)

// funnelCollector reads the funnels from the database at scrape time, so
// every replica reports the same.
type funnelCollector struct {
	db  *store.DB
	cfg *config.Config
	log *slog.Logger
	now func() time.Time
}

func (c funnelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peopleDesc
	ch <- ttpDesc
	ch <- stepDesc
	ch <- retriesDesc
}

func (c funnelCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t := newTables(c.db, c.cfg)
	cs, err := t.list(ctx, t.q("state")+" <> ?", StateCancelled)
	if err != nil {
		c.log.Warn("metrics: cannot read the campaigns", "err", err)
		return
	}
	if len(cs) > maxMetricCampaigns {
		cs = cs[len(cs)-maxMetricCampaigns:]
	}
	for _, cp := range cs {
		f, err := ComputeFunnel(ctx, c.db, c.cfg, cp)
		if err != nil {
			c.log.Warn("metrics: cannot read a campaign's funnel", "campaign", cp.Name, "err", err)
			continue
		}
		g := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{cp.Name}, labels...)...)
		}
		for _, s := range []struct {
			name string
			n    int
		}{{"recipients", f.Recipients}, {"invited", f.Invited}, {"pending", f.Pending}, {"delivered", f.Delivered}, {"bounced", f.Bounced},
			{"failed", f.Failed}, {"opened", f.Opened}, {"began", f.Began}, {"enrolled", f.Enrolled}, {"dropped", f.Dropped}} {
			g(peopleDesc, float64(s.n), s.name)
		}
		med, p90 := math.NaN(), math.NaN()
		if f.TimeToPasskey.Count > 0 {
			med, p90 = f.TimeToPasskey.Median.Seconds(), f.TimeToPasskey.P90.Seconds()
		}
		g(ttpDesc, med, "0.5")
		g(ttpDesc, p90, "0.9")
		for _, s := range f.Steps {
			g(stepDesc, float64(s.Enrolled), s.Step)
		}
		g(retriesDesc, float64(f.Retries))
	}
}
