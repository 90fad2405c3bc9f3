#include "mof.h"

#include "text_scan.h"

namespace replipipe
{
namespace
{

class MofParser
{
public:
	MofParser(std::string_view text, std::string_view what)
	    : scan_(text, std::string(what))
	{
	}

	Result<MofInstance> Parse();

private:
	Status Skip() { return scan_.SkipSpace(true); }
	Status Expect(char c, const char *context);
	Result<MofValue> Value(bool in_array);
	Result<MofValue> Scalar();

	TextScanner scan_;
};

Status MofParser::Expect(char c, const char *context)
{
	if (Status st = Skip(); !st.ok())
		return st;
	if (!scan_.Consume(c))
		return scan_.Error(std::string("expected '") + c + "' " +
		                   context + ", found " + scan_.DescribeNext());
	return Status();
}

Result<MofValue> MofParser::Scalar()
{
	MofValue v;
	char c = scan_.Peek();
	if (c == '"') {
		v.kind = MofValue::Kind::kString;
		// Adjacent string literals concatenate, as in C.
		while (scan_.Peek() == '"') {
			auto s = scan_.QuotedString();
			if (!s.ok())
				return s.status();
			v.string += *s;
			if (Status st = Skip(); !st.ok())
				return st;
		}
		return v;
	}
	if (c == '-' || c == '+' || (c >= '0' && c <= '9')) {
		auto i = scan_.Integer();
		if (!i.ok())
			return i.status();
		v.kind = MofValue::Kind::kInteger;
		v.integer = *i;
		return v;
	}
	if (scan_.ConsumeKeyword("true") || scan_.ConsumeKeyword("false")) {
		v.kind = MofValue::Kind::kBoolean;
		v.boolean = EqualsIgnoreCase(
		        scan_.text().substr(scan_.pos() - 4, 4), "true");
		return v;
	}
	if (scan_.ConsumeKeyword("null"))
		return v;
	return scan_.Error("expected a value (a \"string\", an integer, "
	                   "TRUE, FALSE, NULL or {array}), found " +
	                   scan_.DescribeNext());
}

Result<MofValue> MofParser::Value(bool in_array)
{
	if (!scan_.Consume('{'))
		return Scalar();
	if (in_array)
		return scan_.ErrorAt(scan_.pos() - 1,
		                     "arrays of arrays are not MOF");
	MofValue array;
	array.kind = MofValue::Kind::kArray;
	if (Status st = Skip(); !st.ok())
		return st;
	if (scan_.Consume('}'))
		return array;
	while (true) {
		if (Status st = Skip(); !st.ok())
			return st;
		auto element = Value(true);
		if (!element.ok())
			return element.status();
		array.elements.push_back(std::move(*element));
		if (Status st = Skip(); !st.ok())
			return st;
		if (scan_.Consume('}'))
			return array;
		if (!scan_.Consume(','))
			return scan_.Error("expected ',' or '}' in the array, "
			                   "found " +
			                   scan_.DescribeNext());
	}
}

Result<MofInstance> MofParser::Parse()
{
	MofInstance inst;
	if (Status st = Skip(); !st.ok())
		return st;
	if (!scan_.ConsumeKeyword("instance"))
		return scan_.Error("expected 'instance of <Class> { ... };', "
		                   "found " +
		                   scan_.DescribeNext());
	if (Status st = Skip(); !st.ok())
		return st;
	if (!scan_.ConsumeKeyword("of"))
		return scan_.Error("expected 'of' after 'instance', found " +
		                   scan_.DescribeNext());
	if (Status st = Skip(); !st.ok())
		return st;
	inst.class_pos = scan_.pos();
	auto cls = scan_.Identifier("a class name");
	if (!cls.ok())
		return cls.status();
	inst.class_name = std::move(*cls);
	if (Status st = Expect('{', "after the class name"); !st.ok())
		return st;
	while (true) {
		if (Status st = Skip(); !st.ok())
			return st;
		if (scan_.Consume('}'))
			break;
		MofProperty prop;
		prop.name_pos = scan_.pos();
		auto name = scan_.Identifier("a property name or '}'");
		if (!name.ok())
			return name.status();
		for (const MofProperty &p : inst.properties)
			if (EqualsIgnoreCase(p.name, *name))
				return scan_.ErrorAt(prop.name_pos,
				                     "property " + *name +
				                             " given twice");
		prop.name = std::move(*name);
		if (Status st = Expect('=', ("after " + prop.name).c_str());
		    !st.ok())
			return st;
		if (Status st = Skip(); !st.ok())
			return st;
		prop.value_pos = scan_.pos();
		auto value = Value(false);
		if (!value.ok())
			return value.status();
		prop.value = std::move(*value);
		if (Status st = Expect(
		            ';', ("after the value of " + prop.name).c_str());
		    !st.ok())
			return st;
		inst.properties.push_back(std::move(prop));
	}
	if (Status st = Skip(); !st.ok())
		return st;
	scan_.Consume(';');
	if (Status st = Skip(); !st.ok())
		return st;
	if (!scan_.AtEnd())
		return scan_.Error("unexpected " + scan_.DescribeNext() +
		                   " after the instance (one instance only)");
	return inst;
}

} // namespace

const char *MofValue::KindName() const
{
	switch (kind) {
	case Kind::kNull:
		return "NULL";
	case Kind::kString:
		return "a string";
	case Kind::kInteger:
		return "an integer";
	case Kind::kBoolean:
		return "a boolean";
	case Kind::kArray:
		return "an array";
	}
	return "?";
}

Result<MofInstance> ParseMofInstance(std::string_view text,
                                     std::string_view what)
{
	return MofParser(text, what).Parse();
}

bool MofIsEmpty(std::string_view text)
{
	TextScanner scan(text, "MOF");
	return scan.SkipSpace(true).ok() && scan.AtEnd();
}

} // namespace replipipe
