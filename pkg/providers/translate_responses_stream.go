package providers

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// ---- chat.completion.chunk stream → Responses stream ----

// DefaultMaxRecapBytes is the default of Limits.MaxRecapBytes.
const DefaultMaxRecapBytes = 4 << 20

// responsesFromChunks translates a chat.completion.chunk stream into the events of a
// Responses stream, one chunk at a time: response.created and response.in_progress at the
// first chunk; an output item for the text (output_item.added, content_part.added, then
// output_text.delta per piece) and one per tool call (output_item.added, then
// function_call_arguments.delta); and at the end, once the chat stream has ended cleanly,
// the closing events of each item and response.completed (response.incomplete after a
// length or content-filter finish). A stream that fails never gets its closing events.
//
// The closing events repeat each item's whole text or arguments, as OpenAI's do. What they
// repeat is held until the end, so it is capped: past recap bytes in all, an item's
// closing events carry an empty text (the deltas carried all of it), and its memory is
// let go. That keeps a stream's memory bounded by configuration, whatever its length.
type responsesFromChunks struct {
	provider string
	resp     *response
	recap    int // bytes the closing events may still repeat

	seq     int64
	started bool
	msg     *openItem         // the open message item, if any
	tools   map[int]*openItem // chat tool call index → its function_call item
	open    []*openItem       // tool items in output order, closed at the end
	items   int               // output items started
	finish  string
	usage   *chatUsage
}

// openItem is an output item being streamed.
type openItem struct {
	index int
	item  responseItem
	text  strings.Builder // the text or arguments so far, while within the recap cap
	over  bool            // the text outgrew the cap and is not kept
}

func newResponsesFromChunks(provider string, resp *response, recap int) *responsesFromChunks {
	return &responsesFromChunks{provider: provider, resp: resp, recap: recap, tools: map[int]*openItem{}}
}

// event renders one stream event with the next sequence number.
func (s *responsesFromChunks) event(events []Event, ev responseEvent) []Event {
	ev.SequenceNumber = s.seq
	s.seq++
	return append(events, Event{Name: ev.Type, Data: mustMarshal(ev)})
}

// start adds response.created and response.in_progress if they have not been sent.
func (s *responsesFromChunks) start(events []Event) []Event {
	if s.started {
		return events
	}
	s.started = true
	events = s.event(events, responseEvent{Type: "response.created", Response: s.resp})
	return s.event(events, responseEvent{Type: "response.in_progress", Response: s.resp})
}

// chunk takes one chat.completion.chunk and returns the events to send.
func (s *responsesFromChunks) chunk(data []byte) ([]Event, error) {
	var c chatCompletion
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, badResponse(s.provider, "stream chunk", err)
	}
	if c.Error != nil {
		return nil, &Error{Provider: s.provider, StatusCode: http.StatusBadGateway, Type: c.Error.Type, Message: c.Error.Message}
	}
	if !s.started {
		s.resp.Model = cmp.Or(c.Model, s.resp.Model)
	}
	events := s.start(nil)
	if c.Usage != nil {
		s.usage = c.Usage
	}
	for _, ch := range c.Choices {
		if ch.Index != 0 || ch.Delta == nil {
			continue // n > 1 has no Responses form; only the first choice is told
		}
		if text := deref(ch.Delta.Content) + deref(ch.Delta.Refusal); text != "" {
			events = s.text(events, text)
		}
		for _, tc := range ch.Delta.ToolCalls {
			events = s.toolCall(events, tc)
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			s.finish = *ch.FinishReason
		}
	}
	return events, nil
}

func (s *responsesFromChunks) newItem(it responseItem) *openItem {
	o := &openItem{index: s.items, item: it}
	s.items++
	return o
}

// keep adds piece to what o's closing events repeat, within the cap.
func (s *responsesFromChunks) keep(o *openItem, piece string) {
	if o.over {
		return
	}
	if len(piece) > s.recap {
		o.over = true
		s.recap += o.text.Len()
		o.text = strings.Builder{}
		return
	}
	s.recap -= len(piece)
	o.text.WriteString(piece)
}

// text streams a piece of the answer's text, opening the message item if none is open.
func (s *responsesFromChunks) text(events []Event, piece string) []Event {
	if s.msg == nil {
		s.msg = s.newItem(responseItem{Type: "message", ID: newResponseID("msg_"), Status: statusInProgress, Role: "assistant"})
		it := s.msg.item
		events = s.event(events, responseEvent{Type: "response.output_item.added", OutputIndex: &s.msg.index, Item: &it})
		part := outputText("")
		events = s.event(events, responseEvent{Type: "response.content_part.added", ItemID: it.ID,
			OutputIndex: &s.msg.index, ContentIndex: new(int), Part: &part})
	}
	s.keep(s.msg, piece)
	return s.event(events, responseEvent{Type: "response.output_text.delta", ItemID: s.msg.item.ID,
		OutputIndex: &s.msg.index, ContentIndex: new(int), Delta: &piece})
}

// toolCall streams a piece of a tool call: its first piece opens a function_call item
// (and ends the text before it), later ones add to its arguments.
func (s *responsesFromChunks) toolCall(events []Event, tc chatToolCallDelta) []Event {
	o, ok := s.tools[tc.Index]
	if !ok {
		events = s.closeMessage(events)
		o = s.newItem(responseItem{Type: "function_call", ID: newResponseID("fc_"), Status: statusInProgress,
			CallID: cmp.Or(tc.ID, fmt.Sprintf("call_%d", tc.Index)), Name: tc.Function.Name})
		s.tools[tc.Index] = o
		s.open = append(s.open, o)
		it := o.item
		events = s.event(events, responseEvent{Type: "response.output_item.added", OutputIndex: &o.index, Item: &it})
	}
	if args := tc.Function.Arguments; args != "" {
		s.keep(o, args)
		events = s.event(events, responseEvent{Type: "response.function_call_arguments.delta", ItemID: o.item.ID,
			OutputIndex: &o.index, Delta: &args})
	}
	return events
}

// closeMessage sends the closing events of the open message item, if any.
func (s *responsesFromChunks) closeMessage(events []Event) []Event {
	o := s.msg
	if o == nil {
		return events
	}
	s.msg = nil
	text := o.text.String()
	events = s.event(events, responseEvent{Type: "response.output_text.done", ItemID: o.item.ID,
		OutputIndex: &o.index, ContentIndex: new(int), Text: &text})
	part := outputText(text)
	events = s.event(events, responseEvent{Type: "response.content_part.done", ItemID: o.item.ID,
		OutputIndex: &o.index, ContentIndex: new(int), Part: &part})
	o.item.Status, o.item.Content = statusCompleted, []responseContent{part}
	return s.closeItem(events, o)
}

// closeItem sends response.output_item.done and adds the item to the response's output.
func (s *responsesFromChunks) closeItem(events []Event, o *openItem) []Event {
	it := o.item
	events = s.event(events, responseEvent{Type: "response.output_item.done", OutputIndex: &o.index, Item: &it})
	s.resp.Output = append(s.resp.Output, it)
	return events
}

// end is called once the chat stream has ended cleanly: it returns the closing events of
// the open items and response.completed (or response.incomplete).
func (s *responsesFromChunks) end() []Event {
	events := s.start(nil)
	events = s.closeMessage(events)
	for _, o := range s.open {
		args := o.text.String()
		events = s.event(events, responseEvent{Type: "response.function_call_arguments.done", ItemID: o.item.ID,
			OutputIndex: &o.index, Arguments: &args, Name: o.item.Name})
		o.item.Status, o.item.Arguments = statusCompleted, args
		events = s.closeItem(events, o)
	}
	s.open = nil
	finishResponse(s.resp, s.finish)
	s.resp.Usage = responseUsageFromChat(s.usage)
	typ := "response.completed"
	if s.resp.Status == statusIncomplete {
		typ = "response.incomplete"
	}
	return s.event(events, responseEvent{Type: typ, Response: s.resp})
}
