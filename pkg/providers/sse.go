package providers

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// sseReader reads server-sent events. Lines may be up to maxLine bytes (no 64 KiB scanner
// limit); a longer line is an error rather than unbounded memory.
type sseReader struct {
	br      *bufio.Reader
	maxLine int
	line    []byte // reused across lines that overflow the bufio buffer
}

func newSSEReader(r io.Reader, maxLine int) *sseReader {
	// A small buffer (there is one per in-flight stream); longer lines are joined in readLine.
	return &sseReader{br: bufio.NewReaderSize(r, 4<<10), maxLine: maxLine}
}

// errLineTooLong means one SSE line exceeded the limit.
var errLineTooLong = errors.New("sse line too long")

// readLine returns the next line without its line ending. The slice is valid until the next call.
func (s *sseReader) readLine() ([]byte, error) {
	frag, err := s.br.ReadSlice('\n')
	if err == nil {
		return trimEOL(frag), nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		if len(frag) > 0 && errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF // a last line with no newline is a cut stream
		}
		return nil, err
	}
	s.line = append(s.line[:0], frag...)
	for {
		frag, err = s.br.ReadSlice('\n')
		if len(s.line)+len(frag) > s.maxLine {
			return nil, fmt.Errorf("%w (over %d bytes)", errLineTooLong, s.maxLine)
		}
		s.line = append(s.line, frag...)
		switch {
		case err == nil:
			return trimEOL(s.line), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// next returns the next event. It returns io.EOF when the stream ends cleanly between events
// and io.ErrUnexpectedEOF when it ends inside one. The event's Data is a fresh slice.
func (s *sseReader) next() (Event, error) {
	var ev Event
	var data []byte
	seen := false
	for {
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && seen {
				return Event{}, io.ErrUnexpectedEOF
			}
			return Event{}, err
		}
		if len(line) == 0 {
			if !seen {
				continue
			}
			ev.Data = data
			return ev, nil
		}
		if line[0] == ':' {
			continue // comment / keep-alive
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			ev.Name = string(value)
			seen = true
		case "data":
			if data != nil {
				data = append(data, '\n')
			}
			data = append(data, value...)
			if data == nil {
				data = []byte{}
			}
			seen = true
		}
	}
}
